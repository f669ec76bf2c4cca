"""Callbacks: glue between the trainer, the methods in ``clustercam.explain`` and the loggers."""
