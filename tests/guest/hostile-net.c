#include "hostile.h"
void net_phase(void) {}
