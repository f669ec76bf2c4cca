"""clustercam's Hydra configs (a package only so the wheel can carry them: pkg://clustercam.conf)."""
