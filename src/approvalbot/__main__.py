from approvalbot.cli import main

raise SystemExit(main())
