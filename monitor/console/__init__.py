"""The web console: what each camera shows, judged alerts, scans of uploads, and the pages."""
