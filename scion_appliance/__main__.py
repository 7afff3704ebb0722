import sys

from scion_appliance.cli import main

sys.exit(main())
