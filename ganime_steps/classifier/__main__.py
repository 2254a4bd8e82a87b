from ganime_steps.classifier.cli import main

raise SystemExit(main())
