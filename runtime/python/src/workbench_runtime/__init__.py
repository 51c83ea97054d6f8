"""The model-I/O runtime: the preprocessing a model's model_info asks for (preprocess), decoding detector
outputs to boxes (detection), model_info itself (model_info) and the errors they raise (errors).

The services run exactly this code, and every deployment package pins it, so a deployed model sees the
tensors it was calibrated and judged on."""
