import sys

from diffcorrupt.cli import main

sys.exit(main())
