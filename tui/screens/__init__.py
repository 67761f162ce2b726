"""One module per wizard screen, in the order the user meets them."""
