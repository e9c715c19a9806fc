"""The stand-in method's command."""


def main(argv: list[str]) -> int:
    print("hello from examplecodec", *argv)
    return 0
