"""The smoke_train step: its kfp component and the plain logic it calls."""
