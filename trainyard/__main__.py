from trainyard.cli import main

raise SystemExit(main())
