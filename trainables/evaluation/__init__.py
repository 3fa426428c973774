"""Evaluation: metrics (scikit-learn, SQuAD), floors fitted without fine-tuning, the scores before
training shared per stage, evaluation with merged adapters, and the eval files each checkpoint keeps."""
