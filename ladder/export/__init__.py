"""The merged model's quantized copies and the GGUF file, and how close each stays to it."""
