"""The tune step: its kfp component and the plain logic it calls."""
