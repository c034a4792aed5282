"""Offline preference optimisation from the rankings: the pure DPO / IPO / Plackett-Luce math (`losses`)."""
