"""Report assembly for ECE 661 HW4: shared tables/discussion and the report.pdf builder."""
