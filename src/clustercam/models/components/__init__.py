"""Plain ``nn.Module`` networks (no Lightning): the autoencoders and their shared encoder shape.

The LightningModules that train them are one level up (``clustercam.models.*_module``).
"""
