"""The user's inputs: model files (Keras, SavedModel, ONNX; the bundled example) and data sets."""
