from ganime_steps.sources.synthetic.cli import main

raise SystemExit(main())
