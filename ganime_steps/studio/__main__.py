from ganime_steps.studio.app import main

raise SystemExit(main())
