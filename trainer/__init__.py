"""The taxi-fare model: schema, input pipeline, Keras model, training and export.

Pure TensorFlow/Keras: nothing here imports kfp, so the same code runs under
``python -m trainer.task``, inside a pipeline component and in a Vertex custom job.
"""
