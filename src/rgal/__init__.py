"""rgal: data-free knowledge transfer with Relation-Guided Adversarial Learning."""

__version__ = "0.1.0"
