import sys

from poolstream.cli import main

sys.exit(main())
