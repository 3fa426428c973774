"""What one trial does: data, model + peft method, the Ray Train worker loop, metrics."""
