"""What the labs use on top of the package: ``experiments`` (cached simulations, sweeps and
goodput searches, no widgets), ``dashboards`` (ipywidgets + plotly), ``checks`` (the exercises'
"yours vs expected"), ``env`` (the environment report every lab prints) and ``results`` (the
committed measurements a lab shows)."""
