DROP TABLE jobs;
DROP TABLE photos;
DROP TABLE users;
