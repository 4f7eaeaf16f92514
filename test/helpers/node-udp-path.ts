/** Imported first by a test file: the UDP relay tests imported after it run on Node's datagram path. */
process.env['PP_TEST_UDP_BATCHED'] = '0';
