from bayesmtl.cli import main

raise SystemExit(main())
