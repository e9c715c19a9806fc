"""WavTokenizer as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method

METHOD = Method(
    name="wavtokenizer", kind="tokenizer", modality="audio", layout="sequence",
    package="tokenforge.tokenizers.wavtokenizer",
    official={"wavtokenizer": "tokenforge.tokenizers.wavtokenizer.official"},
    parity={"wavtokenizer": "tokenforge.tokenizers.wavtokenizer.official",
            "wavtokenizer_train": "tokenforge.tokenizers.wavtokenizer.train_parity"},
    bench=Command("wavtokenizer", "tokenforge.tokenizers.wavtokenizer.bench:main",
                  "audio seconds encoded/decoded per second"),
    demo="tokenforge.tokenizers.wavtokenizer.demo:part",
)
