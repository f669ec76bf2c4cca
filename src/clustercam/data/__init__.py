"""LightningDataModules: every one yields (x, y, index) batches and knows its input shape."""
