from openpod.meter.main import main

raise SystemExit(main())
