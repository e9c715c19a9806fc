"""TokenFlow's part of `tokenforge demo`: fitted on the photos at 32 px."""

from tokenforge.demo_stages import IMAGE_EXPECT, DemoPart, image_tokenizer


def part() -> DemoPart:
    return image_tokenizer("tokenflow", "tokenizers/tokenflow", 32, {"default": 300, "long": 2000},
                           expect=IMAGE_EXPECT + " TokenFlow's can be near-uniform squares this early.")
