"""Static facts about a model file: I/O, quantisation, operators, parameters."""
