from storyloom.cli import main

raise SystemExit(main())
