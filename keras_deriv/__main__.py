import sys

from keras_deriv.cli import main

sys.exit(main())
