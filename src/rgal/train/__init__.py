"""Training loops: data-free distillation, supervised teachers, evaluation."""
