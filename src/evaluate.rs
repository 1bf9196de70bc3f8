//! Evaluation against ground truth: precision, recall, F1, score distributions.
