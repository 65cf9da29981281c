"""The verify_export step: its kfp component and the plain logic it calls."""
