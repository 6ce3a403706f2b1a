module example.com/shop/banana

go 1.22
