"""Evaluation metrics by modality: `tokenforge.metrics.audio` (mel/STFT distance, SI-SNR, PESQ, STOI, UTMOS)."""
