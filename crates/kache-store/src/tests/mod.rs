mod model;
mod unit;
