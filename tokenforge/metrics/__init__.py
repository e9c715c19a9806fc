"""Evaluation metrics by modality: `tokenforge.metrics.audio` (mel/STFT distance, SI-SNR, PESQ, STOI, UTMOS),
`tokenforge.metrics.image` (PSNR, SSIM variants, LPIPS, FID), `tokenforge.metrics.fid_protocols` (named FID / IS /
precision-recall protocols over `tokenforge.metrics.inception`), `tokenforge.metrics.mesh`; weight files are
found offline and sha256-checked by `tokenforge.metrics.weights` (tables: `tokenforge.metrics.weight_files`)."""
