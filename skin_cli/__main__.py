from skin_cli.main import main

raise SystemExit(main())
