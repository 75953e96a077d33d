"""Day and shift reports: the station's records of a period in, its figures out (`model`),
drawn as tables, CSV and one self-contained HTML page with inline SVG charts (`tabular`,
`charts`, `html`). `gather` reads a period's records from the store; everything else is pure."""
