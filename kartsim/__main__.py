from kartsim.cli import main

raise SystemExit(main())
