"""VQGAN's part of `tokenforge demo`: fitted on the photos at 32 px; its face tokens are what the token
generators learn (their parts name it in ``requires``)."""

from tokenforge.demo_stages import DemoPart, image_tokenizer

# Demo-only overrides of the tiny config. With random codebook init its 8-dim l2-normalised codebook collapses to
# one code within ~100 steps on 14 photos (usage 1/256), which leaves the generators nothing to learn; k-means
# init + dead-code replacement (both options of the library's VectorQuantizer) keep codes alive. Its GAN term
# (disc_start 2) keeps the decoder at one blurry image for the whole short budget: the demo trains the
# reconstruction + codebook losses only (disc_start beyond the run).
FIT_EXTRA = ("--model.init_args.model.init_args.quantizer.init_args.kmeans_init", "true",
             "--model.init_args.model.init_args.quantizer.init_args.dead_code_threshold", "1.0",
             "--model.init_args.disc_start", "1000000")


def part() -> DemoPart:
    return image_tokenizer("vqgan", "tokenizers/vqgan", 32, {"default": 400, "long": 2000}, fit_extra=FIT_EXTRA)
