import sys

from embgemma_keras.cli import main

sys.exit(main())
