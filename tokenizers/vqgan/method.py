"""VQGAN (taming / LlamaGen / VAR VQVAE / MAGE) as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Method

METHOD = Method(
    name="vqgan", kind="tokenizer", modality="image", layout="grid", package="tokenforge.tokenizers.vqgan",
    official={"var_msrq": "tokenforge.tokenizers.quantizers.official_var",
              "var_vqvae": "tokenforge.tokenizers.vqgan.official",
              "llamagen_vq": "tokenforge.tokenizers.vqgan.official",
              "mage_vqgan": "tokenforge.tokenizers.vqgan.mage"},
    parity={"var_msrq": "tokenforge.tokenizers.quantizers.official_var",
            "llamagen_vq_train": "tokenforge.tokenizers.vqgan.train_parity"},
    demo="tokenforge.tokenizers.vqgan.demo:part",
)
