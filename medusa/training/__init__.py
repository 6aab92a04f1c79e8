"""Training: heads (Medusa-1, token-input, sequential, Medusa-2) and LoRA fine-tuning."""
