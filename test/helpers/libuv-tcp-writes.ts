/** Imported first by a test file: the TCP relay tests imported after it write through Node's writeBuffer only. */
process.env['PACKETPONY_TCP_SEND_NOW'] = '0';
