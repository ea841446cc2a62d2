"""Exit statuses of the `convnest` command line: each kind of failure has its own."""

OK = 0
NOTHING_USABLE = 1  # the paths exist but hold no image series the loader can open
USAGE = 2  # a bad option or combination of options (argparse uses 2 as well)
MODEL = 3  # no model installed, or the model folder was refused (tampered, mismatched, pickles)
NO_SUCH_PATH = 4  # a path given on the command line does not exist
INTERRUPTED = 130  # Ctrl-C

EPILOG = (
    "exit status: 0 success, 1 nothing usable found, 2 bad options, 3 no model or model refused, "
    "4 a path does not exist, 130 interrupted"
)
