//! Dice similarity of clks and candidate search.
