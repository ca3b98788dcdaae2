import sys

from embgemma_keras.cli import main

if __name__ == "__main__":
    sys.exit(main())
