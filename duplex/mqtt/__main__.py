import sys

from duplex.mqtt.cli import main

sys.exit(main())
