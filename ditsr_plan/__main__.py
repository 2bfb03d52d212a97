from ditsr_plan.cli import main

raise SystemExit(main())
