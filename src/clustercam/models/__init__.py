"""nn.Modules (autoencoders, classifier wrappers) and the LightningModules that train them."""
